"""What keeps each player to their own pace: one turn in flight per session, a request rate,
a daily budget, a body size."""

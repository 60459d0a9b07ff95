"""A turn's events for Server-Sent Events: read from the STORY and LIVE streams, resumable
by event id on any API replica."""

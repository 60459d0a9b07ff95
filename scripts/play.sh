#!/usr/bin/env bash
# Play two turns against a running stack (`make dev`) with curl, then fetch the scene image.
#   scripts/play.sh                      (API and TOKEN default to the dev stack's)
#   API=http://127.0.0.1:8000 TOKEN=... scripts/play.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
API=${API:-http://127.0.0.1:8000}
if [[ -z ${TOKEN:-} ]]; then
  TOKEN=$(cd "$REPO" && { uv run --frozen taleforge token 2>/dev/null \
    || python3 -m uv run --frozen taleforge token; })
fi
AUTH=(-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
# A turn is finished when it completed or failed and none of its images is still pending.
finished() { python3 -c "
import json, sys
t = json.load(sys.stdin)
done = t['status'] == 'failed' or (t['status'] == 'completed' and t['images']
                                   and all(i['status'] != 'pending' for i in t['images']))
sys.exit(0 if done else 1)"; }

session=$(curl -fsS -X POST "$API/api/sessions" "${AUTH[@]}" -d '{}')
session_id=$(echo "$session" | field "['session_id']")
echo "session $session_id: $(echo "$session" | field "['title']")"
echo "$session" | field "['opening']"

play() { # input_type text
  local turn_id turn=""
  turn_id=$(curl -fsS -X POST "$API/api/story/progress" "${AUTH[@]}" \
    -d "{\"session_id\": \"$session_id\", \"input_type\": \"$1\", \"text\": \"$2\"}" \
    | field "['turn_id']")
  echo; echo "> ($1) $2"
  for _ in $(seq 1 300); do
    if turn=$(curl -fsS "$API/api/turns/$turn_id" "${AUTH[@]}") && echo "$turn" | finished; then
      break
    fi
    sleep 0.2
  done
  echo "$turn" | field "['narration'] or 'FAILED: ' + str(d['error'])"
  LAST_TURN=$turn
}

play speech "Hello? Is anyone there?"
play action "I light the lantern and step inside."

image_url=$(echo "$LAST_TURN" | field "['images'][0]['url']")
curl -fsS "$API$image_url" -H "Authorization: Bearer $TOKEN" -o scene.png
echo; echo "scene image saved to scene.png ($(wc -c < scene.png) bytes)"

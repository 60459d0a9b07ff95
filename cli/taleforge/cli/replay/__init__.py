"""`taleforge replay`: re-narrate a recorded session on another model, or rebuild a database.

- `renarrate`: the narrator itself (`taleforge.narrator.narration.Narrator`, its prompt
  building, memory folds and OpenAI client) runs on the session's recorded turns with
  scratch adapters (`scratch`): state in memory, events on `replay.<run>.>` subjects, nothing
  on `story.>`, no KV bucket or database touched.
- `rebuild`: the persistence service's own rebuild into another database.
"""

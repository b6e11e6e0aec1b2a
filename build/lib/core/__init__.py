"""The floor every package stands on: records, layouts, run files, file helpers, model
profiles, variant names and the shared defaults. Imports none of prepare/serve/measure/train."""

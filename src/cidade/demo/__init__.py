"""The demo city: a real OpenStreetMap extract and simulated devices on its streets
(docs/demo.md)."""

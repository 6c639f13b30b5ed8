"""What every stage shares and none owns: typed settings from TOML (config), one writer per store or
run folder (lease), whole-file writes (atomic), fault points for the kill tests (faults), what made a
result (provenance), and one-line OS errors (oserrors). Imports no torch and no other package of
this project: extract, store, classify and pipeline all stand on it."""

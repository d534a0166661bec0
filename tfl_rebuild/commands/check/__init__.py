"""`tfl-rebuild check PATH...`: every model end to end, one row each.

Per model: parse; list every op we cannot convert (all of them, not the first); rebuild in Keras
and verify against TFLite (the commands' pipeline, as `keras` does); convert to Core ML and check
the converted program's numbers against TFLite (as `coreml` does).

    discover  which models, the name each row shows, the folder each keeps under --keep
    rows      the options, each stage's outcome, the row (data only)
    scan      every op the rebuild would refuse, at once
    stages    one model through every stage (runs in the worker)
    worker    `python -m tfl_rebuild.commands.check.worker --worker ...`: one model, one process
    pool      the driver: a worker per model, `jobs` at once, timeouts, Ctrl-C and SIGTERM
    report    the rows as a rich table, JSON, Markdown
    command   the `check` command: arguments checked, run, printed

Stage statuses: Keras verified | mismatch | not verified (the runtime cannot run the model) |
built (--no-verify) | unsupported | failed; Core ML checked | mismatch | not checked (the MIL
evaluator cannot run the program) | converted (--no-verify) | unsupported | failed | skipped.
A row passes when both stages are verified/checked (built/converted under --no-verify; Core ML
skipped under --no-coreml): "not verified" is never a pass.
"""

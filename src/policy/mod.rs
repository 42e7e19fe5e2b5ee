//! CEL capability policies: loading, validation, evaluation, merging, and
//! the decision record with its reasons.

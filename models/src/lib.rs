//! edgellm-models: how each architecture composes runtime ops into a forward pass.
#![forbid(unsafe_code)]

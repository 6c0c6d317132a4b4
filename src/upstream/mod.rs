//! Where tensors go once a request is preprocessed. For now the built-in
//! `echo` upstream; model-server clients come next.

pub mod echo;

//! The capability model: names, sets, the kernel's execve transformation
//! rules, file-capability xattr parsing and the default sets.

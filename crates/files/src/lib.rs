//! bootherd-files: how bootherd touches the file system, in one place.
//!
//! - [`beneath`]: the serving rule. A name is resolved and opened below one directory in one
//!   step, so nothing outside it is ever served, whatever symlinks are swapped in meanwhile.
//! - [`landing`]: the one way a file is written: whole or not at all (temporary file, fsync,
//!   rename or link, directory fsync), with leftovers of crashed writers cleared at start.
//! - [`lock`]: writers of one file in several processes take turns (`flock`).
//! - [`DirSource`] and [`DirUploads`]: a directory as the TFTP core's file source and upload
//!   target, built on the two above (feature `tftp`).
//!
//! The protocol crates stay free of file system code and clocks; the store lands its state
//! and images here.

pub mod beneath;
#[cfg(feature = "tftp")]
mod dir_source;
pub mod landing;
pub mod lock;
#[cfg(feature = "tftp")]
mod uploads;

#[cfg(feature = "tftp")]
pub use dir_source::DirSource;
pub use landing::{write_atomic, write_private};
#[cfg(feature = "tftp")]
pub use uploads::DirUploads;

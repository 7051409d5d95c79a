//! canal-coord

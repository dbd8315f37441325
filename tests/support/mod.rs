#![allow(dead_code)]
pub mod mirror;
pub mod upstream;

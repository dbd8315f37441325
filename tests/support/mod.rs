#![allow(dead_code)]
pub mod upstream;

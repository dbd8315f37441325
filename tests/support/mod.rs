#![allow(dead_code)]
pub mod dist;
pub mod mirror;
pub mod serve;
pub mod upstream;

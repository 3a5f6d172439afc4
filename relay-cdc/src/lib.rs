pub mod lsn;
pub mod pgoutput;

pub mod lsn;
pub mod pgoutput;
pub mod replication;

//! `tcp`: the port accepts a connection.

use serde_json::{Map, Value as Json};
use tokio::net::TcpStream;

pub(super) async fn observe(address: &str) -> Result<Map<String, Json>, String> {
    match TcpStream::connect(address).await {
        Ok(_) => Ok(Map::new()),
        Err(e) => Err(format!("cannot connect to {address}: {e}")),
    }
}

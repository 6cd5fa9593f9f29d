//! `steward token` and `steward keys`: API tokens and the server's keys, managed
//! directly in the store — the data directory's, or PostgreSQL with `--store` — whether
//! or not a server is running on it.

use std::path::Path;

use serde_json::json;

use super::{Output, exit};
use crate::auth::{Role, generate_secret, hash_secret};
use crate::store::StoreError;

pub async fn create(data: &Path, store: Option<&str>, name: &str, role: Role, output: Output) -> u8 {
    let store = match super::store::open(data, store, None).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let secret = generate_secret();
    match store.create_token(name, role, &hash_secret(&secret)).await {
        Ok(info) => {
            match output {
                Output::Json => println!("{}", json!({"name": info.name, "role": info.role, "token": secret})),
                Output::Table => {
                    println!("{secret}");
                    eprintln!("token `{name}` ({role}) created. This is the only time the secret is shown: store it now.");
                }
            }
            exit::OK
        }
        Err(e @ StoreError::NameTaken { .. }) => {
            eprintln!("error: {e}; revoke it first or pick another name");
            exit::FAILED
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

pub async fn list(data: &Path, store: Option<&str>, output: Output) -> u8 {
    let tokens = match super::store::open(data, store, None).await {
        Ok(s) => s.list_tokens().await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match tokens {
        Ok(tokens) => {
            match output {
                Output::Json => println!("{}", json!({ "tokens": tokens })),
                Output::Table => {
                    let rows: Vec<Vec<String>> = tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.role.to_string(),
                                t.created_at.to_rfc3339(),
                                t.revoked_at.map(|r| format!("revoked {}", r.to_rfc3339())).unwrap_or_else(|| "active".into()),
                            ]
                        })
                        .collect();
                    super::print_table(&["NAME", "ROLE", "CREATED", "STATE"], &rows);
                }
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

pub async fn revoke(data: &Path, store: Option<&str>, name: &str) -> u8 {
    let result = match super::store::open(data, store, None).await {
        Ok(s) => s.revoke_token(name).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match result {
        Ok(true) => {
            eprintln!("token `{name}` revoked");
            exit::OK
        }
        Ok(false) => {
            eprintln!("error: no active token named `{name}` (see `steward token list`)");
            exit::FAILED
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

/// `steward keys rotate NAME`: a fresh key; whatever the old one signed stops verifying.
pub async fn rotate_key(data: &Path, store: Option<&str>, name: &str) -> u8 {
    let result = match super::store::open(data, store, None).await {
        Ok(s) => s.rotate_server_key(name).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            eprintln!("key `{name}` rotated: links signed before now no longer work; new pages carry new links");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

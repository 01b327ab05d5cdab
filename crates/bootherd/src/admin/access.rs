//! `bootherd password` and `bootherd token`: the admin password and API tokens.

use anyhow::{Context, bail};
use clap::Subcommand;

use super::DataDir;

/// Where `bootherd password` stores the admin password's hash.
pub(crate) const PASSWORD_FILE: &str = "admin-password";
/// Where API tokens are stored (hashed).
pub(crate) const TOKEN_FILE: &str = "api-tokens.yaml";

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it (only its hash is stored: it cannot be shown again).
    Add {
        /// A name saying who uses it (ansible, ci): letters, digits, '-', '_' and '.'.
        name: String,
    },
    /// List token names and when they were made.
    List,
    /// Revoke a token.
    Remove {
        /// Token name.
        name: String,
    },
}

pub(crate) fn token(command: TokenCommand, dir: &DataDir) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir.data)
        .with_context(|| format!("creating {}", dir.data.display()))?;
    let tokens = bootherd_web::TokenFile::new(dir.data.join(TOKEN_FILE));
    match command {
        TokenCommand::Add { name } => {
            let token = tokens.create(&name)?;
            if dir.json {
                println!("{}", serde_json::json!({ "name": name, "token": token }));
            } else {
                println!("{token}");
                eprintln!(
                    "token '{name}' created; send it as 'Authorization: Bearer <token>'. It is not stored and cannot be shown again."
                );
            }
        }
        TokenCommand::List => {
            let list = tokens.list()?;
            if dir.json {
                let list: Vec<_> = list
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "created": t.created}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else if list.is_empty() {
                println!("no API tokens (create one with `bootherd token add NAME`)");
            } else {
                for t in list {
                    println!("{}", t.name);
                }
            }
        }
        TokenCommand::Remove { name } => {
            if !tokens.remove(&name)? {
                bail!("no token named '{name}'");
            }
            println!("token '{name}' revoked");
        }
    }
    Ok(())
}

/// Reads the new password: twice without echo on a terminal, else one line of stdin (for
/// scripts: `echo "$PW" | bootherd password`).
pub(super) fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let read_line = || -> anyhow::Result<String> {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    if !stdin.is_terminal() {
        return read_line();
    }
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let original = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut silent = original.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &silent).context("turning off echo")?;
    let result = (|| {
        eprint!("new admin password: ");
        let first = read_line()?;
        eprint!("\nagain: ");
        let second = read_line()?;
        eprintln!();
        anyhow::ensure!(
            first == second,
            "the two passwords differ; nothing was changed"
        );
        Ok(first)
    })();
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &original);
    result
}

pub(crate) fn password(print: bool, dir: &DataDir) -> anyhow::Result<()> {
    let hash = bootherd_web::hash_password(&read_password()?)?;
    if print {
        println!("{hash}");
        return Ok(());
    }
    std::fs::create_dir_all(&dir.data)
        .with_context(|| format!("creating {}", dir.data.display()))?;
    let path = dir.data.join(PASSWORD_FILE);
    bootherd_store::write_private(&path, format!("{hash}\n").as_bytes())?;
    println!(
        "admin password set ({}); restart bootherd serve to use it",
        path.display()
    );
    Ok(())
}

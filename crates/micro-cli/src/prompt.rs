//! Questions on the terminal: a visible answer, or a password read without echo. When stdin is
//! not a terminal (scripts, tests), answers are read as lines from stdin.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::{CliError, Result};

/// Asks `question` and returns the answer without its line ending.
pub fn line(question: &str) -> Result<String> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|err| CliError::new(format!("cannot read the answer: {err}")))?;
    if read == 0 {
        return Err(CliError::new(format!("no answer to {:?}: stdin is closed", question.trim())));
    }
    Ok(answer.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks for a secret without echoing it on a terminal.
pub fn secret(question: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return line(question);
    }
    let answer = rpassword::prompt_password(question)
        .map_err(|err| CliError::new(format!("cannot read the password: {err}")))?;
    Ok(answer)
}

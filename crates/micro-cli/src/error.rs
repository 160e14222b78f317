//! One error type for every command, carrying the message and exit code of docs/compatibility.md §2.3.

use std::fmt;
use std::process::ExitCode;

/// A failed command: one line for stderr and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

/// Exit code of a plain failure (`Not found`, bad input, unknown command).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error: what clap reports as one (an unknown flag, a missing argument, a
/// bad value for a typed flag) and the CLI's own checks of its arguments, as Unix tools and clap
/// exit. The original exited 1; `micro`, `micro <unknown>` and an unknown subcommand still do
/// (docs/cli.md, "Exit codes").
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the server refused the caller (401/403).
pub const EXIT_UNAUTHORIZED: u8 = 2;
/// Exit code of `micro call` given a `--request_timeout` that is not a duration, as the original.
pub const EXIT_INVALID_TIMEOUT: u8 = 2;
/// Exit code of `micro call` given an endpoint that is not `Handler.Method`.
pub const EXIT_MALFORMED_METHOD: u8 = 3;
/// Exit code when the server cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code when a known service is not served by the server (the original's `route not found`).
pub const EXIT_ROUTE_NOT_FOUND: u8 = 4;
/// Exit code when a called service or method does not exist.
pub const EXIT_UNKNOWN_SERVICE: u8 = 5;
/// Exit code of any other error the server returned.
pub const EXIT_SERVER_ERROR: u8 = 127;

impl CliError {
    /// A plain failure (exit 1) with `message`, its first letter upper-cased as the original did.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: capitalise(&message.into()), code: EXIT_FAILURE }
    }

    /// A usage error (exit [`EXIT_USAGE`]): arguments the command cannot take, refused before
    /// anything is sent.
    pub fn usage(message: impl Into<String>) -> Self {
        Self { message: capitalise(&message.into()), code: EXIT_USAGE }
    }

    pub fn with_code(message: impl Into<String>, code: u8) -> Self {
        Self { message: message.into(), code }
    }

    pub fn not_found() -> Self {
        Self::new("Not found")
    }

    pub fn unreachable(address: &str) -> Self {
        Self::with_code(
            format!("Failed to connect to micro server at {address} — is 'micro server' running?"),
            EXIT_UNREACHABLE,
        )
    }

    /// A connection to `address` that failed: the TLS handshake's reason when that is what
    /// failed, else [`Self::unreachable`].
    pub fn connect_failed(address: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        match micro_core::tls::Failure::find(err) {
            Some(failure) => Self::tls_failure(address, &failure),
            None => Self::unreachable(address),
        }
    }

    /// A TLS handshake with `address` that failed for `failure`, with what to do about it.
    pub fn tls_failure(address: &str, failure: &micro_core::tls::Failure) -> Self {
        use micro_core::tls::Failure;
        let hint = match failure {
            Failure::Untrusted => {
                format!(" — if it uses a private CA, trust it with `micro env add ENV {address} --ca FILE`")
            }
            Failure::WrongName => " — connect by a name or IP address the certificate lists".to_string(),
            Failure::NotTls => {
                " — if it serves plain gRPC, add the environment again without --tls or --ca".to_string()
            }
            _ => String::new(),
        };
        Self::with_code(
            format!("Failed to connect to micro server at {address}: {failure}{hint}"),
            EXIT_UNREACHABLE,
        )
    }

    /// An endpoint that is not `Handler.Method`.
    pub fn malformed_method(endpoint: &str) -> Self {
        Self::with_code(
            format!("Method name \"{endpoint}\" invalid format. Expecting service.endpoint"),
            EXIT_MALFORMED_METHOD,
        )
    }

    /// A service that no descriptors describe.
    pub fn unknown_service(service: &str) -> Self {
        Self::with_code(format!("Service \"{service}\" not found"), EXIT_UNKNOWN_SERVICE)
    }

    /// An endpoint the service's descriptors do not have.
    pub fn unknown_method(endpoint: &str) -> Self {
        Self::with_code(format!("Service method \"{endpoint}\" not found"), EXIT_UNKNOWN_SERVICE)
    }

    /// A service the server does not route to.
    pub fn route_not_found(service: &str) -> Self {
        Self::with_code(format!("Service \"{service}\" not found"), EXIT_ROUTE_NOT_FOUND)
    }

    /// Maps a gRPC status from the server at `address` (reached with TLS when `tls`) to the
    /// CLI's message and exit code.
    pub fn from_status(status: &tonic::Status, address: &str, tls: bool) -> Self {
        use tonic::Code;
        let message = status.message().trim();
        if let Some(failure) = micro_core::tls::Failure::find(status) {
            return Self::tls_failure(address, &failure);
        }
        match status.code() {
            Code::NotFound => Self::not_found(),
            Code::Unauthenticated | Code::PermissionDenied if message.is_empty() => {
                Self::with_code("Not authorized to perform this request", EXIT_UNAUTHORIZED)
            }
            Code::Unauthenticated if message == micro_core::Denied::AccountRequired.to_string() => {
                Self::with_code(format!("{message}: log in with `micro login`"), EXIT_UNAUTHORIZED)
            }
            Code::Unauthenticated | Code::PermissionDenied => {
                Self::with_code(capitalise(&one_line(message)), EXIT_UNAUTHORIZED)
            }
            Code::DeadlineExceeded => Self::new("Request timed out"),
            Code::Cancelled if message.contains("Timeout expired") => Self::new("Request timed out"),
            Code::Unavailable if is_transport_failure(status) => Self::unreachable(address),
            // The connection broke rather than the call failing. A plain-text client talking to a
            // TLS port sees exactly this (a broken pipe, an HTTP/2 framing error).
            _ if has_transport_source(status) => {
                let hint = if tls { "" } else { " — if it serves TLS, add the environment with --tls" };
                Self::with_code(
                    format!(
                        "The connection to micro server at {address} failed ({}){hint}",
                        one_line(message)
                    ),
                    EXIT_UNREACHABLE,
                )
            }
            _ if message.is_empty() => Self::with_code(
                format!("The server failed the request ({})", status.code()),
                EXIT_SERVER_ERROR,
            ),
            _ => Self::with_code(capitalise(&one_line(message)), EXIT_SERVER_ERROR),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Whether an `UNAVAILABLE` status came from the connection rather than from the service: tonic
/// reports transport failures with a `tonic::transport::Error` source.
fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error;
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    status.message().contains("transport error") || status.message().contains("tcp connect")
}

/// Whether `status` carries a `tonic::transport::Error`: the connection failed, not the call.
fn has_transport_source(status: &tonic::Status) -> bool {
    use std::error::Error;
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn capitalise(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The result of a command.
pub type Result<T> = std::result::Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn statuses_map_to_the_messages_and_exit_codes_of_the_original() {
        let cases = [
            (Status::not_found("not found"), "Not found", EXIT_FAILURE),
            (Status::unauthenticated(""), "Not authorized to perform this request", EXIT_UNAUTHORIZED),
            (
                Status::unauthenticated("An account is required"),
                "An account is required: log in with `micro login`",
                EXIT_UNAUTHORIZED,
            ),
            (
                Status::permission_denied("Access denied to namespace"),
                "Access denied to namespace",
                EXIT_UNAUTHORIZED,
            ),
            (Status::cancelled("Timeout expired"), "Request timed out", EXIT_FAILURE),
            (Status::deadline_exceeded("slow"), "Request timed out", EXIT_FAILURE),
            (
                Status::invalid_argument("key too long:\n 2000 bytes"),
                "Key too long: 2000 bytes",
                EXIT_SERVER_ERROR,
            ),
            (
                Status::new(Code::Internal, ""),
                "The server failed the request (Internal error)",
                EXIT_SERVER_ERROR,
            ),
        ];
        for (status, message, code) in cases {
            let err = CliError::from_status(&status, "127.0.0.1:8081", false);
            assert_eq!((err.message.as_str(), err.code), (message, code), "{status:?}");
        }
    }

    #[test]
    fn plain_errors_are_capitalised() {
        assert_eq!(CliError::new("not found").message, "Not found");
        assert_eq!(CliError::new("").message, "");
    }
}

//! `micro web`: prints the web dashboard's URL for the current environment, and opens it in a
//! browser when run on a terminal with a display (docs/web.md).
//!
//! The dashboard is `micro server --web-address` (127.0.0.1:8082 by default): the URL is the
//! environment's host on port 8082, or `MICRO_WEB_ADDRESS` when set (the variable the server
//! reads too), `https` when the environment is reached over TLS (the server then serves the
//! dashboard over TLS as well).

use std::io::IsTerminal as _;

use clap::Args;

use crate::error::{CliError, Result};
use crate::settings::Settings;
use crate::{Global, out};

/// The port `micro server` serves the dashboard on unless told otherwise.
pub const DEFAULT_WEB_PORT: u16 = 8082;

#[derive(Args, Debug)]
pub struct WebArgs {
    /// Only print the URL, never open a browser
    #[arg(long)]
    print: bool,
}

pub fn run(global: &Global, args: WebArgs) -> Result<()> {
    let settings = Settings::load(&global.settings_path())?;
    let name = global.env_name(&settings);
    let env = settings.env(&name).ok_or_else(|| crate::client::env_not_found(&name))?;
    if env.proxy_address.is_empty() {
        return Err(CliError::new(format!(
            "Environment '{name}' has no address: set one with `micro env add {name} HOST:PORT`"
        )));
    }
    let given = std::env::var("MICRO_WEB_ADDRESS").ok().filter(|value| !value.trim().is_empty());
    let url = dashboard_url(&env.proxy_address, env.uses_tls(), given.as_deref())?;
    out(&format!("{url}\n"));
    if !args.print && std::io::stdout().is_terminal() && has_display() {
        open(&url);
    }
    Ok(())
}

/// The dashboard of the server whose gRPC address is `proxy`: at `web_address` when given,
/// else on the same host, port [`DEFAULT_WEB_PORT`]. An unspecified host (`0.0.0.0:8082`) is
/// the environment's host.
pub fn dashboard_url(proxy: &str, tls: bool, web_address: Option<&str>) -> Result<String> {
    let scheme = if tls { "https" } else { "http" };
    let proxy_host = host_of(proxy);
    let Some(address) = web_address else {
        return Ok(format!("{scheme}://{proxy_host}:{DEFAULT_WEB_PORT}"));
    };
    let address = address.trim();
    if address.eq_ignore_ascii_case("off") {
        return Err(CliError::new("The web dashboard is off here (MICRO_WEB_ADDRESS=off)"));
    }
    let port = address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| CliError::new(format!("MICRO_WEB_ADDRESS={address} is not HOST:PORT")))?;
    let host = match host_of(address) {
        "0.0.0.0" | "[::]" | "" => proxy_host,
        host => host,
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// `host` of `host:port`, `[::1]` of `[::1]:8081`, the whole of a bare host; without a
/// leading `http://` or `https://`.
fn host_of(address: &str) -> &str {
    let address =
        address.strip_prefix("https://").or_else(|| address.strip_prefix("http://")).unwrap_or(address);
    let address = address.trim_end_matches('/');
    match address.rsplit_once(':') {
        Some((host, port))
            if port.bytes().all(|b| b.is_ascii_digit()) && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => address,
    }
}

/// Whether a browser window can be shown: always on macOS, with X11 or Wayland elsewhere.
fn has_display() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    cfg!(target_os = "macos") || set("DISPLAY") || set("WAYLAND_DISPLAY")
}

/// Hands `url` to the desktop's opener; the URL is printed already, so a failure only says so.
fn open(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(err) = started {
        eprintln!("cannot open a browser with {opener}: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_environments_host_on_8082_or_the_given_address() {
        assert_eq!(dashboard_url("127.0.0.1:8081", false, None).unwrap(), "http://127.0.0.1:8082");
        assert_eq!(dashboard_url("[::1]:8081", false, None).unwrap(), "http://[::1]:8082");
        assert_eq!(
            dashboard_url("micro.example.com:443", true, None).unwrap(),
            "https://micro.example.com:8082"
        );
        assert_eq!(dashboard_url("micro.example.com", true, None).unwrap(), "https://micro.example.com:8082");
        assert_eq!(
            dashboard_url("127.0.0.1:8081", false, Some("127.0.0.1:9000")).unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            dashboard_url("10.0.0.5:8081", false, Some("0.0.0.0:9000")).unwrap(),
            "http://10.0.0.5:9000"
        );
        let off = dashboard_url("127.0.0.1:8081", false, Some("off")).unwrap_err();
        assert!(off.to_string().contains("off"), "{off}");
        assert!(dashboard_url("127.0.0.1:8081", false, Some("nope")).is_err());
    }
}

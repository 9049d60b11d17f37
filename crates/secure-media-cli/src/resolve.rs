//! `secure-media resolve`: what each URL turns into in a mode.

use secure_media_core::resolve_str;

use crate::access::{build, title_case};
use crate::args::ResolveArgs;
use crate::Failure;

pub(crate) async fn run(args: ResolveArgs) -> Result<(), Failure> {
    let access = build(&args.access).await?;
    let strategy = access.media.strategy();
    let mut failed = None;
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
                eprintln!("error: {url}: {}", access.redact(&error.to_string()));
                failed = Some(Failure::other(format!("{url}: {error}")));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

//! The asset reader against the reference server, driven the way bevy drives it: from a
//! non-tokio executor, with fetches on the tokio handle the reader was given.

use std::path::Path;
use std::sync::Arc;

use bevy_asset::io::{AssetReader, AssetReaderError, AssetSourceBuilders, AssetSourceId, Reader};
use secure_media_bevy::{SecureAssetReader, SecureMediaPlugin};
use secure_media_core::{SecureMediaMode, StaticToken, TokenSource};
use secure_media_server::{samples, ReferenceServer, RunningServer, ServerConfig};
use secure_media_testkit::{fetcher, logged_in};

/// The asset path of a media file: `host:port/app/media/name`.
fn asset_path(server: &RunningServer, name: &str) -> String {
    format!("{}/{}/media/{name}", server.host(), server.app_id())
}

async fn read_all(reader: &SecureAssetReader, path: &str) -> Result<Vec<u8>, AssetReaderError> {
    let mut asset = reader.read(Path::new(path)).await?;
    let mut bytes = Vec::new();
    asset.read_to_end(&mut bytes).await.map_err(|e| AssetReaderError::Io(Arc::new(e)))?;
    Ok(bytes)
}

#[test]
fn every_mode_reads_from_a_non_tokio_executor() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server =
        runtime.block_on(ReferenceServer::start(secure_media_testkit::https(ServerConfig::default()))).unwrap();
    let expected = &samples().iter().find(|s| s.name == "sample-640x480.png").unwrap().bytes;
    for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned] {
        let reader =
            SecureAssetReader::new(fetcher(&server, mode, logged_in(&server, "bevy")), runtime.handle().clone());
        // futures' executor stands in for bevy's: no tokio context on this thread.
        let bytes = futures::executor::block_on(read_all(&reader, &asset_path(&server, "sample-640x480.png"))).unwrap();
        assert_eq!(&bytes[..], &expected[..], "{mode}");
    }
}

#[test]
fn not_found_refusals_and_meta() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server =
        runtime.block_on(ReferenceServer::start(secure_media_testkit::https(ServerConfig::default()))).unwrap();
    let reader = SecureAssetReader::new(
        fetcher(&server, SecureMediaMode::HeaderBased, logged_in(&server, "bevy")),
        runtime.handle().clone(),
    );
    let missing = futures::executor::block_on(read_all(&reader, &asset_path(&server, "missing.png")));
    assert!(matches!(missing, Err(AssetReaderError::NotFound(_))), "{missing:?}");
    let requests = server.stats().requests;
    let meta = futures::executor::block_on(async {
        reader.read_meta(Path::new(&asset_path(&server, "sample-64x64.gif"))).await.map(|_| ())
    });
    assert!(matches!(meta, Err(AssetReaderError::NotFound(_))));
    assert_eq!(server.stats().requests, requests, "read_meta sent no request");
    assert!(!futures::executor::block_on(reader.is_directory(Path::new("x"))).unwrap());

    let forged: Arc<dyn TokenSource> = Arc::new(StaticToken::parse("forged").unwrap());
    let refused_reader =
        SecureAssetReader::new(fetcher(&server, SecureMediaMode::HeaderBased, forged), runtime.handle().clone());
    let refused = futures::executor::block_on(read_all(&refused_reader, &asset_path(&server, "sample-64x64.gif")));
    assert!(matches!(refused, Err(AssetReaderError::HttpError(401))), "{refused:?}");
}

#[test]
fn the_plugin_registers_its_source() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server =
        runtime.block_on(ReferenceServer::start(secure_media_testkit::https(ServerConfig::default()))).unwrap();
    let plugin = SecureMediaPlugin::new(
        fetcher(&server, SecureMediaMode::Embedded, logged_in(&server, "bevy")),
        runtime.handle().clone(),
    )
    .with_source_name("chat");
    let mut app = bevy_app::App::new();
    app.add_plugins(plugin);
    let mut builders = app.world_mut().resource_mut::<AssetSourceBuilders>();
    let source = builders.get_mut(AssetSourceId::from("chat")).expect("the source is registered");
    let reader = (source.reader)();
    let path = asset_path(&server, "sample-64x64.gif");
    let bytes = futures::executor::block_on(async {
        let mut asset = reader.read(Path::new(&path)).await.unwrap();
        let mut bytes = Vec::new();
        asset.read_to_end(&mut bytes).await.unwrap();
        bytes
    });
    assert!(bytes.starts_with(b"GIF8"));
}

/// Plain http is the opt-in: `over_http` reads from a plain-http server (whose host the fetcher
/// allows over http); without it the reader asks for https, which that server cannot answer.
#[test]
fn over_http_is_the_opt_in_for_a_plain_http_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(ReferenceServer::start(ServerConfig::default())).unwrap();
    let fetcher = fetcher(&server, SecureMediaMode::Embedded, logged_in(&server, "bevy"));
    let path = asset_path(&server, "sample-64x64.gif");
    let plain = SecureAssetReader::new(fetcher.clone(), runtime.handle().clone()).over_http();
    let expected = &samples().iter().find(|s| s.name == "sample-64x64.gif").unwrap().bytes;
    assert_eq!(&futures::executor::block_on(read_all(&plain, &path)).unwrap()[..], &expected[..]);
    let https = SecureAssetReader::new(fetcher, runtime.handle().clone());
    assert!(futures::executor::block_on(read_all(&https, &path)).is_err());
    assert_eq!(server.stats().requests_with_token, 1, "only the opted-in read carried the token");
}

#[test]
fn assets_asked_ahead_are_read_from_one_presign_call() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server =
        runtime.block_on(ReferenceServer::start(secure_media_testkit::https(ServerConfig::default()))).unwrap();
    let fetcher = fetcher(&server, SecureMediaMode::Presigned, logged_in(&server, "bevy"));
    let plugin = SecureMediaPlugin::new(fetcher, runtime.handle().clone());
    let reader = plugin.reader().clone();
    let paths: Vec<String> =
        (0..30).map(|i| format!("{}/{}/media/gallery/{i:04}.png", server.host(), server.app_id())).collect();
    runtime.block_on(reader.prefetch(paths.iter().map(Path::new))).unwrap();
    assert_eq!((server.stats().presign_calls, server.stats().urls_presigned), (1, 30));
    for path in &paths {
        let bytes = futures::executor::block_on(read_all(&reader, path)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{path}");
    }
    assert_eq!(server.stats().presign_calls, 1, "every read found its URL ready");
}

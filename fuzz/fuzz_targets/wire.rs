//! The protobuf field reader and rewriter on arbitrary bytes, with every
//! request and response schema: never a panic, and a rewrite that changes
//! nothing reads back the same leaves.
#![no_main]

use bytes::Bytes;
use doltgate::remotesapi::wire::{self, Edit, Label, WireError};
use doltgate::remotesapi::{read_repo_name, Rpc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let message = Bytes::copy_from_slice(data);
    for rpc in Rpc::ALL {
        let _ = read_repo_name(rpc, data);
        let schemas = [Some(rpc.request_schema()), rpc.response_url_schema()];
        for schema in schemas.into_iter().flatten() {
            let mut seen = Vec::new();
            let read = wire::read::<WireError>(data, schema, &mut |label, value| {
                seen.push((label, value.to_vec()));
                Ok(())
            });
            let kept = wire::rewrite::<WireError>(&message, schema, &mut |_, _| Ok(Edit::Keep));
            assert_eq!(read.is_ok(), kept.is_ok());
            if let Ok(changed) = kept {
                assert!(changed.is_none(), "keeping every field must not copy the message");
            }
            // Replacing URLs and renaming the repository must produce a readable message.
            let rewritten = wire::rewrite::<WireError>(&message, schema, &mut |label, _| {
                Ok(match label {
                    Label::Url => Edit::Replace(Bytes::from_static(b"http://gw/_doltgate/files/e/x")),
                    Label::RepoPath => Edit::Replace(Bytes::from_static(b"db")),
                    Label::RepoId => Edit::Remove,
                })
            });
            if let Ok(Some(out)) = rewritten {
                wire::read::<WireError>(&out, schema, &mut |_, _| Ok(())).expect("rewritten message reads back");
            }
        }
    }
});

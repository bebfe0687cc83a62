//! Prints what signed-expiry authentication costs: parsing and recovering an EIP-191 signature
//! (the step the identity service caches), and building the message to sign.
//!
//!     cargo bench -p clawx-identity --bench signatures

use std::{hint::black_box, time::Instant};

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use clawx_identity::domain::signature::{parse_signature, recover_personal_sign, signed_request_message};

fn measure(label: &str, iterations: u32, mut work: impl FnMut()) {
    for _ in 0..iterations / 10 {
        work();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        work();
    }
    let per_op = started.elapsed() / iterations;
    println!("{label:<48} {:>10.2} µs/op  ({iterations} iterations)", per_op.as_secs_f64() * 1e6);
}

fn main() {
    let wallet = PrivateKeySigner::random();
    let message = signed_request_message("alice", 1_900_000_000_000, true);
    let signature = format!("0x{}", hex::encode(wallet.sign_message_sync(message.as_bytes()).unwrap().as_bytes()));
    let parsed = parse_signature(&signature).unwrap();
    assert_eq!(recover_personal_sign(&parsed, message.as_bytes()), Some(wallet.address()));

    measure("signed_request_message (sha256 of the inputs)", 200_000, || {
        black_box(signed_request_message(black_box("alice"), black_box(1_900_000_000_000), true));
    });
    measure("parse_signature (hex, v, low-s check)", 200_000, || {
        black_box(parse_signature(black_box(&signature)).unwrap());
    });
    measure("recover EIP-191 signer (secp256k1 backend)", 20_000, || {
        black_box(recover_personal_sign(black_box(&parsed), black_box(message.as_bytes())));
    });
}

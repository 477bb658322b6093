//! What every 4 KiB block of the data file holds, so that any block read back can be checked
//! without keeping a copy of the file.
//!
//! A block is `[block number: u64 LE][stamp: u64 LE][4080 pseudo-random bytes]`, the bytes drawn
//! from a generator seeded by (block number, stamp). The file is created with stamp 0 in every
//! block; a write of `--verify` writes a nonzero stamp unique to that write. Random bytes keep
//! the file incompressible; the 16-byte header lets a mismatch say which block (and which write)
//! the bytes came from.

use super::{measure::Rng, spec::BLOCK};

/// The byte a read buffer is filled with before each verified read: a buffer still holding it
/// after the read completed was never written.
pub const POISON: u8 = 0xEE;

const HEADER: usize = 16;

/// Fills `buf` (one block) with the content of block `block` as written with `stamp`.
pub fn fill(buf: &mut [u8], block: u64, stamp: u64) {
    debug_assert_eq!(buf.len(), BLOCK);
    buf[..8].copy_from_slice(&block.to_le_bytes());
    buf[8..HEADER].copy_from_slice(&stamp.to_le_bytes());
    let mut rng = Rng::new(block.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ stamp ^ 0x00be_ac4e);
    for w in buf[HEADER..].chunks_exact_mut(8) {
        w.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
}

/// Whether `buf` holds exactly block `block` written with `stamp`. `scratch` is a block-sized
/// buffer to build the expected content in.
pub fn matches(buf: &[u8], block: u64, stamp: u64, scratch: &mut [u8]) -> bool {
    fill(scratch, block, stamp);
    buf == scratch
}

/// Says what `buf` holds instead of block `block` with `stamp`: the poison (never written),
/// another block or another write of this block (by its header, if the rest agrees with it), or
/// the first byte that differs.
pub fn diagnose(buf: &[u8], block: u64, stamp: u64, scratch: &mut [u8]) -> String {
    if buf.iter().all(|&b| b == POISON) {
        return "the buffer still holds the poison written before the read: the operation \
                reported completion without writing it"
            .into();
    }
    let word = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    let (got_block, got_stamp) = (word(0), word(8));
    if matches(buf, got_block, got_stamp, scratch) {
        return format!(
            "it holds block {got_block} with stamp {got_stamp:#x} (wanted block {block}, stamp \
             {stamp:#x}): {}",
            if got_block != block {
                "another block's bytes (wrong offset, or another operation's buffer)"
            } else {
                "another write of this block (a stale or lost write)"
            }
        );
    }
    fill(scratch, block, stamp);
    let first = buf.iter().zip(scratch.iter()).position(|(a, b)| a != b);
    format!(
        "it differs from the expected bytes from byte {} on (header says block {got_block}, \
         stamp {got_stamp:#x})",
        first.unwrap_or(0)
    )
}

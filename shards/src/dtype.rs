//! Token dtypes of a Megatron indexed dataset.

use serde::{Deserialize, Serialize};

/// Element type of the `.bin` file, with Megatron-LM's dtype codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// `numpy.uint16`, Megatron code 8: vocabularies of at most 65,536 ids.
    Uint16,
    /// `numpy.int32`, Megatron code 4: larger vocabularies (DeepSeek-V3 has 129,280).
    Int32,
}

impl TokenDtype {
    /// The smallest dtype that holds every id of a vocabulary of `vocab_size` entries.
    pub fn for_vocab(vocab_size: u64) -> Self {
        if vocab_size <= 1 << 16 {
            TokenDtype::Uint16
        } else {
            TokenDtype::Int32
        }
    }
    /// Megatron-LM's `DType` code written in the `.idx` header.
    pub fn code(self) -> u8 {
        match self {
            TokenDtype::Uint16 => 8,
            TokenDtype::Int32 => 4,
        }
    }
    /// Inverse of [`TokenDtype::code`]; `None` for codes tokenmill does not read.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            8 => Some(TokenDtype::Uint16),
            4 => Some(TokenDtype::Int32),
            _ => None,
        }
    }
    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            TokenDtype::Uint16 => 2,
            TokenDtype::Int32 => 4,
        }
    }
    /// Largest token id the dtype holds.
    pub fn max_id(self) -> u64 {
        match self {
            TokenDtype::Uint16 => u16::MAX as u64,
            TokenDtype::Int32 => i32::MAX as u64,
        }
    }
    /// Little-endian encoding of `tokens` appended to `out`; errors on an id the dtype cannot hold.
    pub fn encode_into(self, tokens: &[u32], out: &mut Vec<u8>) -> Result<(), u32> {
        out.reserve(tokens.len() * self.size());
        match self {
            TokenDtype::Uint16 => {
                for &t in tokens {
                    let v = u16::try_from(t).map_err(|_| t)?;
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            TokenDtype::Int32 => {
                for &t in tokens {
                    let v = i32::try_from(t).map_err(|_| t)?;
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        Ok(())
    }
    /// Decodes little-endian tokens of this dtype (`bytes.len()` a multiple of [`Self::size`]).
    pub fn decode(self, bytes: &[u8]) -> Vec<u32> {
        match self {
            TokenDtype::Uint16 => bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .collect(),
            TokenDtype::Int32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_sizes_pick_the_megatron_dtype() {
        assert_eq!(TokenDtype::for_vocab(50_257), TokenDtype::Uint16);
        assert_eq!(TokenDtype::for_vocab(65_536), TokenDtype::Uint16);
        assert_eq!(TokenDtype::for_vocab(65_537), TokenDtype::Int32);
        assert_eq!(TokenDtype::for_vocab(129_280), TokenDtype::Int32);
        assert_eq!(TokenDtype::Uint16.code(), 8);
        assert_eq!(TokenDtype::Int32.code(), 4);
    }

    #[test]
    fn encode_rejects_ids_the_dtype_cannot_hold() {
        let mut out = Vec::new();
        assert_eq!(
            TokenDtype::Uint16.encode_into(&[1, 70_000], &mut out),
            Err(70_000)
        );
        out.clear();
        TokenDtype::Int32
            .encode_into(&[1, 70_000], &mut out)
            .unwrap();
        assert_eq!(TokenDtype::Int32.decode(&out), vec![1, 70_000]);
    }
}

//! Names of the four tap points (the outputs of the residual stages).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::TriscopeError;

/// One of layer1..layer4: the stages whose outputs the model exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LayerId {
    Layer1,
    Layer2,
    Layer3,
    #[default]
    Layer4,
}

impl LayerId {
    pub const ALL: [LayerId; 4] = [Self::Layer1, Self::Layer2, Self::Layer3, Self::Layer4];

    /// 0 for layer1 ... 3 for layer4.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        ["layer1", "layer2", "layer3", "layer4"][self.index()]
    }

    /// Downsampling of this stage's output relative to the input (4, 8, 16, 32).
    pub fn stride(self) -> usize {
        4 << self.index()
    }

    /// Channels of this stage's output for a given base width (256..2048 at width 64).
    pub fn channels(self, base_width: usize) -> usize {
        (base_width * 4) << self.index()
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl crate::util::choice::Choice for LayerId {
    const KIND: &'static str = "layer";
    const ALL: &'static [Self] = &LayerId::ALL;
    fn name(self) -> &'static str {
        LayerId::name(self)
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Layer1 => &["1"],
            Self::Layer2 => &["2"],
            Self::Layer3 => &["3"],
            Self::Layer4 => &["4"],
        }
    }
}

impl std::str::FromStr for LayerId {
    type Err = TriscopeError;
    fn from_str(s: &str) -> std::result::Result<Self, TriscopeError> {
        crate::util::choice::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_geometry() {
        assert_eq!("layer3".parse::<LayerId>().unwrap(), LayerId::Layer3);
        assert_eq!("4".parse::<LayerId>().unwrap(), LayerId::Layer4);
        assert!("layer5".parse::<LayerId>().is_err());
        assert_eq!(LayerId::Layer4.channels(64), 2048);
        assert_eq!(LayerId::Layer1.channels(64), 256);
        assert_eq!(LayerId::Layer4.stride(), 32);
    }
}

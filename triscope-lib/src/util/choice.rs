//! Closed sets of named values a user picks by name (layers, methods, attacks, devices): one
//! parser for all of them, which the command line's flags and the settings files share.

use crate::error::{Result, TriscopeError};

/// A value from a closed, named set.
pub trait Choice: Copy + PartialEq + 'static {
    /// What a value is called in messages ("layer", "attribution method").
    const KIND: &'static str;
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    /// The canonical name, listed in help and written back.
    fn name(self) -> &'static str;
    /// Other spellings accepted (not listed).
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }
}

/// Case, '-', '_' and spaces do not matter: "Grad-CAM++" is "gradcam++".
fn key(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The value named `s` (its name or an alias), or an error listing the names.
pub fn parse<T: Choice>(s: &str) -> Result<T> {
    let k = key(s);
    T::ALL
        .iter()
        .copied()
        .find(|t| key(t.name()) == k || t.aliases().iter().any(|a| key(a) == k))
        .ok_or_else(|| {
            TriscopeError::InvalidArgument(format!(
                "unknown {} '{}': use {}",
                T::KIND,
                s.trim(),
                names::<T>()
            ))
        })
}

/// "a, b or c".
pub fn names<T: Choice>() -> String {
    let all: Vec<&str> = T::ALL.iter().map(|t| t.name()).collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fruit {
        Apple,
        BloodOrange,
    }

    impl Choice for Fruit {
        const KIND: &'static str = "fruit";
        const ALL: &'static [Self] = &[Self::Apple, Self::BloodOrange];
        fn name(self) -> &'static str {
            match self {
                Self::Apple => "apple",
                Self::BloodOrange => "blood-orange",
            }
        }
        fn aliases(self) -> &'static [&'static str] {
            match self {
                Self::Apple => &["malus"],
                Self::BloodOrange => &[],
            }
        }
    }

    #[test]
    fn names_aliases_and_spelling_variants_parse_and_others_are_refused_with_the_list() {
        assert_eq!(parse::<Fruit>("apple").unwrap(), Fruit::Apple);
        assert_eq!(parse::<Fruit>(" Malus ").unwrap(), Fruit::Apple);
        assert_eq!(parse::<Fruit>("Blood_Orange").unwrap(), Fruit::BloodOrange);
        assert_eq!(parse::<Fruit>("bloodorange").unwrap(), Fruit::BloodOrange);
        let e = parse::<Fruit>("pear").unwrap_err().to_string();
        assert!(
            e.contains("unknown fruit 'pear': use apple or blood-orange"),
            "{e}"
        );
    }
}

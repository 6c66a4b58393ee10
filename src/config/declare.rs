//! The `settings!` macro: each setting is declared once, in its section,
//! with its type, default, kind of value, variable, flag and help (the
//! doc comment). From that one declaration come the field of its section's
//! struct, its default, its parsing from any source, its `--help` line, its
//! place in the log of effective settings and its row in the README's
//! table ([`Declared`]).

/// What is known of a setting apart from its value.
#[derive(Debug)]
pub struct Declared {
    pub section: &'static str,
    /// The key within its section of a TOML file.
    pub key: &'static str,
    pub env: &'static str,
    pub flag: &'static str,
    /// Its doc comment, in Markdown.
    pub help: &'static str,
    /// Its default, as shown to people.
    pub default: fn() -> String,
    /// Its value may hold a password: redacted wherever it is shown.
    pub secret: bool,
}

impl Declared {
    /// The key of a flat TOML file, as earlier versions read it (and as
    /// this one still does): the flag's words joined by underscores.
    pub fn flat_key(&self) -> String {
        self.flag.replace('-', "_")
    }

    /// `section.key`, as the log of effective settings names it.
    pub fn name(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// The help text without Markdown's code marks, for a terminal.
    pub fn plain_help(&self) -> String {
        format!(
            "{} [default: {}]",
            self.help.replace('`', ""),
            (self.default)()
        )
    }
}

/// Picks the declared TOML key, or the field's name.
macro_rules! key_or {
    ($key:literal, $field:ident) => {
        $key
    };
    (, $field:ident) => {
        stringify!($field)
    };
}

/// Picks the declared default text, or the default value as its kind
/// shows it.
macro_rules! default_text {
    ($shown:literal, $kind:expr, $default:expr) => {
        || $shown.to_owned()
    };
    (, $kind:expr, $default:expr) => {
        || $crate::config::kinds::Kind::show(&$kind, &$default)
    };
}

macro_rules! settings {
    ($(
        $(#[doc = $section_doc:literal])*
        [$section:ident] $Section:ident {
            $(
                $(#[doc = $help:literal])+
                $field:ident: $ty:ty = $default:expr, $kind:expr,
                    env $env:literal, flag $flag:literal
                    $(, key $key:literal)? $(, shown $shown:literal)? $(, secret $secret:literal)?;
            )*
        }
    )*) => {
        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone)]
            pub struct $Section {
                $($(#[doc = $help])+ pub $field: $ty,)*
            }

            impl Default for $Section {
                fn default() -> Self {
                    Self { $($field: $default,)* }
                }
            }

            impl $Section {
                const DECLARED: &'static [$crate::config::declare::Declared] = &[$(
                    $crate::config::declare::Declared {
                        section: stringify!($section),
                        key: $crate::config::declare::key_or!($($key)?, $field),
                        env: $env,
                        flag: $flag,
                        help: concat!($($help),+),
                        default: $crate::config::declare::default_text!($($shown)?, $kind, $default),
                        secret: false $(|| $secret)?,
                    },
                )*];

                fn load(sources: &$crate::config::Sources) -> Result<Self, $crate::config::ConfigError> {
                    let mut declared = Self::DECLARED.iter();
                    Ok(Self {$(
                        $field: sources.get(
                            declared.next().expect("one declaration per field"),
                            $default,
                            &$kind,
                        )?,
                    )*})
                }

                fn show(&self, shown: &mut Vec<(&'static $crate::config::declare::Declared, String)>) {
                    let mut declared = Self::DECLARED.iter();
                    $(
                        let setting = declared.next().expect("one declaration per field");
                        shown.push((setting, $crate::config::kinds::Kind::show(&$kind, &self.$field)));
                    )*
                }
            }
        )*

        /// Everything switchboard can be told at start-up, by subsystem.
        #[derive(Debug, Clone, Default)]
        pub struct Settings {
            $(pub $section: $Section,)*
        }

        impl Settings {
            /// Every setting, section by section.
            pub fn declared() -> impl Iterator<Item = &'static $crate::config::declare::Declared> {
                [$($Section::DECLARED,)*].into_iter().flatten()
            }

            fn from_sources(sources: &$crate::config::Sources) -> Result<Self, $crate::config::ConfigError> {
                Ok(Self { $($section: $Section::load(sources)?,)* })
            }

            /// Each setting and its value as shown to people.
            fn shown(&self) -> Vec<(&'static $crate::config::declare::Declared, String)> {
                let mut shown = Vec::new();
                $(self.$section.show(&mut shown);)*
                shown
            }
        }
    };
}

pub(crate) use {default_text, key_or, settings};

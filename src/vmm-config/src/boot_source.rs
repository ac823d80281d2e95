//! `boot-source`: what to boot.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::{check_path, Result, ValidationError, MAX_BOOT_ARGS_LEN};

/// Kernel command line when the user gives none.
pub const DEFAULT_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=-1";

/// `PUT /boot-source`, `"boot-source"` in a config file, `--kernel`,
/// `--initrd` and `--cmdline` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host path of the guest kernel (bzImage or ELF vmlinux).
    pub kernel_image_path: PathBuf,
    /// Kernel command line; the VMM appends its device entries to it.
    #[serde(default)]
    pub boot_args: Option<String>,
    /// Host path of an initramfs, if any.
    #[serde(default)]
    pub initrd_path: Option<PathBuf>,
}

impl BootSource {
    /// The command line to start from: the user's, or [`DEFAULT_BOOT_ARGS`].
    pub fn boot_args_or_default(&self) -> &str {
        self.boot_args.as_deref().unwrap_or(DEFAULT_BOOT_ARGS)
    }

    pub fn validate(&self) -> Result {
        check_path("kernel_image_path", &self.kernel_image_path)?;
        if let Some(initrd) = &self.initrd_path {
            check_path("initrd_path", initrd)?;
        }
        if let Some(args) = &self.boot_args {
            if args.len() > MAX_BOOT_ARGS_LEN {
                return Err(ValidationError::new(
                    "boot_args",
                    format!("is {} bytes long; at most {MAX_BOOT_ARGS_LEN} allowed", args.len()),
                ));
            }
            if args.chars().any(char::is_control) {
                return Err(ValidationError::new("boot_args", "contains a control character (newline, tab, NUL, ...)"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_source_rules() {
        let b =
            BootSource { kernel_image_path: "/k".into(), boot_args: Some("console=ttyS0".into()), initrd_path: None };
        assert!(b.validate().is_ok());
        assert_eq!(b.boot_args_or_default(), "console=ttyS0");
        assert_eq!(BootSource { boot_args: None, ..b.clone() }.boot_args_or_default(), DEFAULT_BOOT_ARGS);
        assert_eq!(
            BootSource { kernel_image_path: "".into(), ..b.clone() }.validate().unwrap_err().field,
            "kernel_image_path"
        );
        assert_eq!(
            BootSource { initrd_path: Some("a\0b".into()), ..b.clone() }.validate().unwrap_err().field,
            "initrd_path"
        );
        assert_eq!(
            BootSource { boot_args: Some("a\nb".into()), ..b.clone() }.validate().unwrap_err().field,
            "boot_args"
        );
        let long = BootSource { boot_args: Some("x".repeat(MAX_BOOT_ARGS_LEN + 1)), ..b };
        assert!(long.validate().unwrap_err().problem.contains("at most 2048"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<BootSource>(r#"{"kernel_image_path":"/k","bootargs":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `bootargs`"), "{err}");
    }
}

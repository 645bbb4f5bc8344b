//! Expected, user-fixable failures of a mutation, returned in its payload (`errors { code field
//! message }`) rather than as a top-level GraphQL error.

/// What kind of user error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserErrorCode {
    /// A field is missing, too long, malformed or out of range.
    InvalidInput,
    /// A per-member limit is reached (e.g. 20 addresses).
    LimitReached,
    /// The thing to change does not exist or belongs to someone else.
    NotFound,
}

/// One user error: which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError {
    /// The kind of failure.
    pub code: UserErrorCode,
    /// The input field at fault (`input.phone`), when one is.
    pub field: Option<String>,
    /// A sentence for the user.
    pub message: String,
}

impl UserError {
    /// An `INVALID_INPUT` error on `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: UserErrorCode::InvalidInput,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    /// A `NOT_FOUND` error on `field`.
    pub fn not_found(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: UserErrorCode::NotFound,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

/// Checks a free-text field: trimmed length within `min..=max` characters and no control
/// characters. Returns the trimmed text.
pub fn text(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    errors: &mut Vec<UserError>,
) -> String {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len < min || len > max {
        errors.push(UserError::invalid(
            field,
            format!("must be {min} to {max} characters"),
        ));
    } else if trimmed.chars().any(char::is_control) {
        errors.push(UserError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    trimmed.to_owned()
}

/// A mainland China mobile number: 11 digits starting with 1[3-9].
pub fn is_mainland_mobile(phone: &str) -> bool {
    let b = phone.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_phone_rules() {
        let mut errors = Vec::new();
        assert_eq!(text("f", "  Li Lei ", 1, 10, &mut errors), "Li Lei");
        assert!(errors.is_empty());
        text("f", "", 1, 10, &mut errors);
        text("f", "a\u{7}b", 1, 10, &mut errors);
        text("f", &"x".repeat(11), 1, 10, &mut errors);
        assert_eq!(errors.len(), 3);
        assert!(is_mainland_mobile("13812345678"));
        assert!(!is_mainland_mobile("12812345678"));
        assert!(!is_mainland_mobile("1381234567"));
        assert!(!is_mainland_mobile("1381234567a"));
    }
}

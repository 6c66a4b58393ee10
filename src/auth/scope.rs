//! Scopes: what a token allows, and what each route asks of it.

use actix_web::http::Method;

/// A scope switchboard checks, as a token's `scope` or `scp` claim names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `GET` and `HEAD` on users.
    UsersRead,
    /// `POST`, `PATCH` and `DELETE` on users.
    UsersWrite,
    /// `POST /fetch`.
    Fetch,
    /// `/metrics`, `/stats` and `/debug/*` on a listener that also serves
    /// the API (none of them is there once an admin listener is set).
    Admin,
}

impl Scope {
    pub const ALL: [Self; 4] = [Self::UsersRead, Self::UsersWrite, Self::Fetch, Self::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Self::UsersRead => "users:read",
            Self::UsersWrite => "users:write",
            Self::Fetch => "fetch",
            Self::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The scopes a token grants (those switchboard knows; others are ignored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// The scopes among `names`.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names.into_iter().fold(Self::default(), |granted, name| {
            match Scope::ALL.iter().find(|scope| scope.name() == name) {
                Some(scope) => Self(granted.0 | scope.bit()),
                None => granted,
            }
        })
    }

    pub fn grants(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

/// What a resource asks of a request's token, once access control is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Users: `users:read` to read, `users:write` to change.
    Users,
    /// `fetch`.
    Fetch,
    /// `admin`.
    Admin,
    /// A valid token, whatever its scopes (`/hello`, unknown paths).
    Token,
}

impl Access {
    /// The scope a request with `method` needs; `None` for any valid token.
    pub fn scope(self, method: &Method) -> Option<Scope> {
        match self {
            Self::Users if matches!(*method, Method::GET | Method::HEAD) => Some(Scope::UsersRead),
            Self::Users => Some(Scope::UsersWrite),
            Self::Fetch => Some(Scope::Fetch),
            Self::Admin => Some(Scope::Admin),
            Self::Token => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_by_name_and_unknown_ones_ignored() {
        let granted = Scopes::of("users:read fetch openid".split_whitespace());
        assert!(granted.grants(Scope::UsersRead));
        assert!(granted.grants(Scope::Fetch));
        assert!(!granted.grants(Scope::UsersWrite));
        assert!(!granted.grants(Scope::Admin));
        assert_eq!(Access::Users.scope(&Method::HEAD), Some(Scope::UsersRead));
        assert_eq!(
            Access::Users.scope(&Method::DELETE),
            Some(Scope::UsersWrite)
        );
    }
}

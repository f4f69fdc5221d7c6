//! UpsertUser (key 20), DeleteUser (key 21), ListUsers (key 22): the
//! broker's SCRAM users (SPEC.md 5.23). The client derives the credential
//! ([`crate::scram::Credential::derive`]) so the password never crosses
//! the wire; ListUsers answers names and mechanisms, never key material.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{put_bytes, put_str, put_vec, Reader, Wire};
use crate::frame::FrameError;

/// Creates `name` or replaces its credential.
#[derive(Clone, PartialEq, Eq)]
pub struct UpsertUserRequest {
    pub name: String,
    pub mechanism: String,
    pub salt: Bytes,
    pub iterations: u32,
    pub stored_key: Bytes,
    pub server_key: Bytes,
}

impl fmt::Debug for UpsertUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpsertUserRequest")
            .field("name", &self.name)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertUserResponse {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteUserRequest {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteUserResponse {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUsersRequest {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUsersResponse {
    pub users: Vec<UserInfo>,
}

/// A user as ListUsers shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub mechanism: String,
}

empty_body!(UpsertUserResponse, DeleteUserResponse, ListUsersRequest);

impl Wire for UpsertUserRequest {
    const MIN_LEN: usize = 2 + 2 + 4 + 4 + 4 + 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.name);
        put_str(buf, &self.mechanism);
        put_bytes(buf, &self.salt);
        buf.put_u32_le(self.iterations);
        put_bytes(buf, &self.stored_key);
        put_bytes(buf, &self.server_key);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(UpsertUserRequest {
            name: r.string()?,
            mechanism: r.string()?,
            salt: r.bytes()?,
            iterations: r.u32()?,
            stored_key: r.bytes()?,
            server_key: r.bytes()?,
        })
    }
}

impl Wire for DeleteUserRequest {
    const MIN_LEN: usize = 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.name);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(DeleteUserRequest { name: r.string()? })
    }
}

impl Wire for UserInfo {
    const MIN_LEN: usize = 2 + 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.name);
        put_str(buf, &self.mechanism);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(UserInfo {
            name: r.string()?,
            mechanism: r.string()?,
        })
    }
}

impl Wire for ListUsersResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.users);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ListUsersResponse { users: r.vec()? })
    }
}

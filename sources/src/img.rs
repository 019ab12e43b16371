//! `img://host/repo`: OCI Distribution registries.

use crate::{ByteStream, Layer, Release, SourceError};

pub struct ImgSource {
    _private: (),
}

impl ImgSource {
    pub async fn current(&self) -> Result<Release, SourceError> {
        todo!()
    }
    pub async fn fetch(&self, layer: &Layer, offset: u64) -> Result<ByteStream, SourceError> {
        let _ = (layer, offset);
        todo!()
    }
}

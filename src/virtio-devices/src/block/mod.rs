//! virtio-blk on a raw image file.

//! The virtio-mmio transport (VIRTIO 1.2, section 4.2), modern interface only.

//! The AF_XDP ingress: our XDP program steers TWP/1 datagrams into one
//! AF_XDP socket per RX queue; everything else goes to the kernel stack.

pub mod ethtool;
pub mod frame;
pub mod loader;
pub mod worker;

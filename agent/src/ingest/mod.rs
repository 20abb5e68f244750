//! Listeners: UDP, Unix datagram and Unix stream sockets to packets on a bounded queue. No parsing here.

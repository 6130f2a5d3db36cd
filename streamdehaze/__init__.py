"""streamdehaze: real-time video dehazing."""

"""Ground floor: errors, the result type, the one atomic writer, images, the input spec."""

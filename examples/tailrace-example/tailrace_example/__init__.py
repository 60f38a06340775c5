"""An example tailrace plugin package: ``redact`` filter, ``csv`` parser, ``sqlite`` output."""

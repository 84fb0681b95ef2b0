"""Pure helpers on mail and files that both stages and storage need (file names, media
sniffing, delivery reports): no database, no configuration."""

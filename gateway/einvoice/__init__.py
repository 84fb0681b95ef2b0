"""Electronic invoices (Factur-X / ZUGFeRD PDFs, UBL 2.1 and UN/CEFACT CII XML): what they
say, read safely, and the French company identifiers they carry (SIREN, SIRET, VAT)."""

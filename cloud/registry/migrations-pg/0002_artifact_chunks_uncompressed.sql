-- Artifact chunks are model weights and tarballs: compression gains little and costs CPU on every put, and a
-- compressed value must be read whole. EXTERNAL keeps them out of line and uncompressed, so a Range read's
-- substr() fetches only the TOAST slices it covers (cloud/artifacts/registry-blobs.ts).
ALTER TABLE "artifact_chunks" ALTER COLUMN "data" SET STORAGE EXTERNAL;

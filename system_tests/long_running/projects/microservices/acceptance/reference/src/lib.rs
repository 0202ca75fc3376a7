//! The reference ServiceMesh lives in `scripts/mesh.py`; this crate only checks it is there.

#[cfg(test)]
mod tests {
    #[test]
    fn the_reference_scripts_are_there() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(root.join("scripts/start.sh").is_file());
        assert!(root.join("scripts/mesh.py").is_file());
    }
}

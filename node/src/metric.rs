//! Names of the metrics the node computes: what windows measure and what
//! releases are called on the wire and in policies.

/// People in the zone (sum over its cameras of mean count).
pub const OCCUPANCY: &str = "occupancy";
/// Gate scans in.
pub const INGRESS: &str = "ingress";
/// Gate scans out.
pub const EGRESS: &str = "egress";
/// Distinct probing devices.
pub const UNIQUE_DEVICES: &str = "unique_devices";
/// Distinct consented app users.
pub const APP_USERS: &str = "app_users";
/// Mean sound level, dB.
pub const SOUND_LEVEL_DB: &str = "sound_level_db";
/// Audio frames that clipped.
pub const CLIPPING_FRAMES: &str = "clipping_frames";
/// Mean CO2, ppm.
pub const CO2_PPM: &str = "co2_ppm";
/// Mean temperature, degC.
pub const TEMPERATURE_C: &str = "temperature_c";
/// Audio frames the on-device classifier labelled applause.
pub const AUDIO_APPLAUSE: &str = "audio_applause";
/// Audio frames labelled music.
pub const AUDIO_MUSIC: &str = "audio_music";
/// Audio frames labelled speech.
pub const AUDIO_SPEECH: &str = "audio_speech";
/// Audio frames labelled crowd noise.
pub const AUDIO_CROWD_NOISE: &str = "audio_crowd_noise";
/// Audio frames labelled clipping.
pub const AUDIO_CLIPPING: &str = "audio_clipping";

/// The audio-class metric of each classifier output, in
/// [`crate::inference::AUDIO_CLASSES`] order.
pub const AUDIO_CLASS_METRICS: [&str; 5] = [
    AUDIO_APPLAUSE,
    AUDIO_MUSIC,
    AUDIO_SPEECH,
    AUDIO_CROWD_NOISE,
    AUDIO_CLIPPING,
];

package org.tornadoswitch.hf;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** The JSON reader of this package: duplicate keys are an error, as they are for the safetensors library. */
final class Json {
    static final ObjectMapper MAPPER = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .build();

    private Json() {}

    /** Parses text, else a one-line HfFormatException naming {@code what}. */
    static JsonNode parse(String text, String what) {
        try {
            JsonNode n = MAPPER.readTree(text);
            if (n == null) throw new HfFormatException(what + " is empty");
            return n;
        } catch (IOException e) {
            throw new HfFormatException(what + " is not valid JSON: " + firstLine(e.getMessage()));
        }
    }

    static JsonNode read(Path file) {
        if (!Files.isRegularFile(file)) throw new HfFormatException(file + " is missing");
        try {
            return parse(Files.readString(file), file.toString());
        } catch (java.nio.charset.MalformedInputException e) {
            throw new HfFormatException(file + " is not UTF-8 text");
        } catch (IOException e) {
            throw new HfFormatException("cannot read " + file + ": " + e.getMessage());
        }
    }

    static String firstLine(String s) {
        if (s == null) return "";
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }
}

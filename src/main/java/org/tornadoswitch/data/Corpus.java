package org.tornadoswitch.data;

import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;

/** The training text: a user's UTF-8 file, or Tiny Shakespeare found locally or downloaded and checked. */
public final class Corpus {
    public static final String TINY_SHAKESPEARE_URL =
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
    public static final long TINY_SHAKESPEARE_BYTES = 1_115_394;
    public static final String TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";
    /** Where Tiny Shakespeare is looked for before downloading: the project's data/, then the team's shared folder. */
    static final List<Path> LOCAL_COPIES = List.of(Path.of("data", "tinyshakespeare.txt"),
            Path.of("..", "shared", "data", "tinyshakespeare.txt"));

    /** Bad training data: the message names the file and what is wrong with it. */
    public static final class DataException extends RuntimeException {
        public DataException(String message) {
            super(message);
        }
    }

    private Corpus() {}

    /** {@code file} when given, else Tiny Shakespeare (local copy, else downloaded into data/). */
    public static String load(Path file) {
        if (file != null) return read(file);
        for (Path p : LOCAL_COPIES)
            if (Files.isRegularFile(p) && isTinyShakespeare(p)) return read(p);
        return read(download(LOCAL_COPIES.get(0)));
    }

    /** Reads a UTF-8 text file, refusing missing, empty, binary and non-UTF-8 files. */
    public static String read(Path file) {
        if (!Files.exists(file)) throw new DataException("data file " + file + " does not exist");
        if (!Files.isRegularFile(file)) throw new DataException("data file " + file + " is not a regular file");
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new DataException("cannot read data file " + file + ": " + e.getMessage());
        }
        if (bytes.length == 0) throw new DataException("data file " + file + " is empty");
        for (int i = 0; i < Math.min(bytes.length, 1 << 16); i++)
            if (bytes[i] == 0) throw new DataException("data file " + file + " looks binary (NUL byte at offset " + i + "); give a UTF-8 text");
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            throw new DataException("data file " + file + " is not valid UTF-8 text (" + e.getMessage() + ")");
        }
    }

    public static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    static boolean isTinyShakespeare(Path p) {
        try {
            return Files.size(p) == TINY_SHAKESPEARE_BYTES && sha256(Files.readAllBytes(p)).equals(TINY_SHAKESPEARE_SHA256);
        } catch (IOException e) {
            return false;
        }
    }

    /** Downloads Tiny Shakespeare into {@code target} (via a temporary file), checking size and checksum. */
    static Path download(Path target) {
        System.err.println("Tiny Shakespeare not found under data/: downloading " + TINY_SHAKESPEARE_URL);
        byte[] bytes;
        try (HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(20))
                .followRedirects(HttpClient.Redirect.NORMAL).build()) {
            HttpResponse<InputStream> r = http.send(HttpRequest.newBuilder(URI.create(TINY_SHAKESPEARE_URL))
                    .timeout(Duration.ofSeconds(120)).build(), HttpResponse.BodyHandlers.ofInputStream());
            if (r.statusCode() != 200) throw new IOException("HTTP " + r.statusCode());
            try (InputStream in = r.body()) {
                bytes = in.readAllBytes();
            }
        } catch (IOException e) {
            throw new DataException("cannot download Tiny Shakespeare (" + e.getClass().getSimpleName()
                    + (e.getMessage() == null ? "" : ": " + e.getMessage()) + "); offline, pass --data FILE"
                    + " or put the corpus at " + target);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new DataException("download of Tiny Shakespeare interrupted; pass --data FILE");
        }
        if (bytes.length != TINY_SHAKESPEARE_BYTES || !sha256(bytes).equals(TINY_SHAKESPEARE_SHA256))
            throw new DataException("the downloaded Tiny Shakespeare has the wrong size or checksum (" + bytes.length
                    + " bytes); nothing was saved; pass --data FILE");
        try {
            Files.createDirectories(target.toAbsolutePath().getParent());
            Path tmp = Files.createTempFile(target.toAbsolutePath().getParent(), ".download", ".tmp");
            Files.write(tmp, bytes);
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new DataException("cannot save Tiny Shakespeare to " + target + ": " + e.getMessage());
        }
        return target;
    }
}
